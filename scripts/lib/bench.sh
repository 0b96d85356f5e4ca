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

# CPU time a process has used so far, in clock ticks: "user system".
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
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
