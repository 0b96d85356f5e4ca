# Helpers shared by the benchmark scripts (sourced, not run).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# memcached runs as root only as another user.
as_user=()
[ "$(id -u)" -eq 0 ] && as_user=(-u nobody)

# A work directory, and every process started with `pids+=($!)` stopped at exit.
bench_dir() { # name
  dir=$(mktemp -d -t "$1.XXXXXX")
  pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
}

# CPU time processes have used so far, in clock ticks: "user system" (pids separated
# by commas are summed).
cpu_ticks() { local p; for p in ${1//,/ }; do cat "/proc/$p/stat"; done | awk '{u += $14; s += $15} END {print u, s}'; }
ticks_per_sec=$(getconf CLK_TCK)

# Runs cashew-load for $seconds against 127.0.0.1:PORT while measuring process PID;
# prints "ops_per_sec cpu_us_per_op p99_us system_share" (the share of the CPU time
# spent in the kernel).
measure_load() { # pid port cashew-load arguments...
  local pid=$1 port=$2; shift 2
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(target/release/cashew-load --target "127.0.0.1:$port" --seconds "$seconds" "$@")
  after=$(cpu_ticks "$pid")
  awk -v out="$out" -v before="$before" -v after="$after" -v hz="$ticks_per_sec" -v s="$seconds" 'BEGIN {
    n = split(out, f, /[ =]/); for (i = 1; i < n; i += 2) v[f[i]] = f[i + 1]
    split(before, b, " "); split(after, a, " "); user = a[1] - b[1]; sys = a[2] - b[2]
    printf "%d %.2f %d %.2f", v["ops_per_sec"], ((user + sys) / hz) * 1e6 / (v["ops_per_sec"] * s), v["p99_us"], (user + sys > 0 ? sys / (user + sys) : 0) }'
}

ratio_header() { # title of the compared column
  printf '%-30s %11s %11s %9s %9s %9s  %-19s %-19s %-19s\n' scenario "base ops/s" "$1" "base us/op" "$1" "base p99us" "ops/s ratio" "CPU/op ratio" "p99 ratio"
}

# One line of a table from a results file of "scenario|round|name|ops cpu p99" lines:
# medians of base and other, and the median and range of the per-round other/base ratios.
ratio_line() { # results scenario base other
  awk -F'|' -v t="$2" -v base="$3" -v other="$4" '
    function median(a, n,   i, j, x) { for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    function range(a, n,   i, lo, hi) { lo = a[1]; hi = a[1]; for (i = 2; i <= n; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
      return sprintf("%.2f-%.2f", lo, hi) }
    $1 == t { split($4, v, " "); ops[$2, $3] = v[1]; cpu[$2, $3] = v[2]; p99[$2, $3] = v[3]; rounds[$2] = 1 }
    END {
      n = 0
      for (r in rounds) { n++; bo[n] = ops[r, base]; oo[n] = ops[r, other]; bc[n] = cpu[r, base]; oc[n] = cpu[r, other]; bp[n] = p99[r, base]; op[n] = p99[r, other]
        ro[n] = oo[n] / bo[n]; rc[n] = oc[n] / bc[n]; rp[n] = (bp[n] > 0 ? op[n] / bp[n] : 0) }
      printf "%-30s %11d %11d %9.2f %9.2f %9d  %.2f [%-12s] %.2f [%-12s] %.2f [%-12s]\n", t, median(bo, n), median(oo, n), median(bc, n), median(oc, n), median(bp, n),
        median(ro, n), range(ro, n), median(rc, n), range(rc, n), median(rp, n), range(rp, n)
    }' "$1"
}

# Medians per scenario and name of CPU per request and the kernel's share of it, from a
# results file as above.
cpu_table() { # results names...
  local results=$1; shift
  awk -F'|' -v names="$*" '
    function median(a, n,   i, j, x) { for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    { split($4, v, " "); k = $1 SUBSEP $3; n[k]++; cpu[k, n[k]] = v[2]; sys[k, n[k]] = v[4]; if (!($1 in seen)) { seen[$1] = 1; order[++t] = $1 } }
    END {
      m = split(names, name, " ")
      printf "%-30s", "CPU us/request (kernel share)"; for (j = 1; j <= m; j++) printf " %16s", name[j]; print ""
      for (i = 1; i <= t; i++) {
        printf "%-30s", order[i]
        for (j = 1; j <= m; j++) { k = order[i] SUBSEP name[j]; delete c; delete s_
          for (r = 1; r <= n[k]; r++) { c[r] = cpu[k, r]; s_[r] = sys[k, r] }
          printf " %9.2f (%3d%%)", median(c, n[k]), 100 * median(s_, n[k]) }
        print "" }
    }' "$results"
}

# Starts one proxy on 127.0.0.1:$port[NAME] in front of one server, and records its
# pid in pid[NAME]. Kinds: nc (nutcracker), c (cashew, one worker thread), c2 (cashew,
# two), old and new (the builds $old_cashew and $new_cashew, one worker thread), epoll
# and uring (cashew-relay).
start_proxy() { # name kind server-port redis(true|false)
  local name=$1 kind=$2 server=$3 redis=$4
  port[$name]=$(free_port)
  printf 'bench:\n  listen: 127.0.0.1:%s\n  redis: %s\n  servers:\n    - 127.0.0.1:%s:1\n' "${port[$name]}" "$redis" "$server" > "$dir/$name.yml"
  case $kind in
    nc) nutcracker -c "$dir/$name.yml" -s "$(free_port)" -a 127.0.0.1 -o "$dir/$name.log" -p "$dir/$name.pid" & pids+=($!) ;;
    c) target/release/cashew -c "$dir/$name.yml" -s "$(free_port)" -a 127.0.0.1 --threads 1 -o "$dir/$name.log" & pids+=($!) ;;
    c2) target/release/cashew -c "$dir/$name.yml" -s "$(free_port)" -a 127.0.0.1 --threads 2 -o "$dir/$name.log" & pids+=($!) ;;
    old | new)
      local build=${kind}_cashew
      "${!build}" -c "$dir/$name.yml" -s "$(free_port)" -a 127.0.0.1 --threads 1 -o "$dir/$name.log" & pids+=($!) ;;
    epoll | uring) target/release/cashew-relay --listen "127.0.0.1:${port[$name]}" --server "127.0.0.1:$server" --mode "$kind" & pids+=($!) ;;
  esac
  pid[$name]=$!
}

# One memcached ($mc) and one redis ($rd), and for each kind in `names` a proxy in
# front of each: NAMEm and NAMEr.
start_backends_and_proxies() {
  mc=$(free_port)
  memcached "${as_user[@]}" -l 127.0.0.1 -p "$mc" -t 1 -U 0 -m 1024 & pids+=($!)
  rd=$(free_port)
  redis-server --bind 127.0.0.1 --port "$rd" --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 & pids+=($!)
  wait_port "$mc"; wait_port "$rd"
  local kind
  for kind in "${names[@]}"; do
    start_proxy "${kind}m" "$kind" "$mc" false
    start_proxy "${kind}r" "$kind" "$rd" true
  done
  for name in "${!port[@]}"; do wait_port "${port[$name]}"; done
}

# Every scenario ("title|m or r|cashew-load arguments") against every kind of `names`
# for $rounds rounds, rotating who goes first so that no one always meets a warmer
# machine; appends "title|round|kind|ops cpu p99 system" lines to $results.
run_rounds() {
  local round scenario title backend load i kind
  for round in $(seq "$rounds"); do
    for scenario in "${scenarios[@]}"; do
      IFS='|' read -r title backend load <<<"$scenario"
      for i in "${!names[@]}"; do
        kind=${names[$(((i + round) % ${#names[@]}))]}
        # shellcheck disable=SC2086
        echo "$title|$round|$kind|$(measure_load "${pid[$kind$backend]}" "${port[$kind$backend]}" $load)" >> "$results"
      done
    done
  done
}

# Tables of each kind against a base kind, per scenario.
ratio_tables() { # base kinds...
  local base=$1 other scenario title; shift
  for other in "$@"; do
    echo
    echo "$other / $base, per round"
    ratio_header "$other"
    for scenario in "${scenarios[@]}"; do
      IFS='|' read -r title _ <<<"$scenario"
      ratio_line "$results" "$title" "$base" "$other"
    done
  done
}
