// What every script here shares: a check that reports, and a bound on the run.
"use strict";

let failed = 0;

function check(cond, what) {
  if (cond) {
    console.log("ok:", what);
  } else {
    failed += 1;
    console.error("FAIL:", what);
  }
}

// Runs `body`, then reports "all ok" or fails the process; never runs past `seconds`.
function run(body, seconds = 60) {
  const limit = setTimeout(() => {
    console.error(`FAIL: not done after ${seconds} s`);
    process.exit(1);
  }, seconds * 1000);
  limit.unref();
  body().then(
    () => {
      if (failed > 0) process.exit(1);
      console.log("all ok");
    },
    (e) => {
      console.error("FAIL: threw", e);
      process.exit(1);
    },
  );
}

const pause = (ms) => new Promise((ok) => setTimeout(ok, ms));

module.exports = { check, run, pause };
