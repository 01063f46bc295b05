#!/bin/bash
# Device check: the suite on the card, each library test in its own process (GPU kernels),
# then the CLI suite, the library suite with CPU kernels and with GPU kernels under libtest's
# threads, and the benchmark. Every phase has its own time cap.
cd "$(dirname "$0")/.."
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f $icd ] && export VK_DRIVER_FILES=$icd
export XDG_RUNTIME_DIR=/tmp RUST_BACKTRACE=0
mkdir -p /work target/release; [ "$PWD" = /work/main ] || ln -sfn "$PWD" /work/main; cp devrun/peft-wgpu target/release/
{ date -u; nvidia-smi; ./devrun/peft-wgpu info; } > $OUT/info.txt 2>&1
./devrun/lib --list --format terse 2>/dev/null | sed 's/: test$//' | head -n ${TESTS_HEAD:-100000} > /tmp/tests.txt
mkdir -p /tmp/logs
one() {
  local t0=$(date +%s.%N); timeout 45 ./devrun/lib --exact "$1" --test-threads=1 > "/tmp/logs/$1.log" 2>&1
  local rc=$?; echo "$rc $(awk "BEGIN{print $(date +%s.%N) - $t0}") $1"
}
export -f one
echo "phase A $(date -u +%T)"
timeout 150 bash -c "PEFT_WGPU_KERNELS=gpu xargs -P 8 -I{} bash -c 'one {}' < /tmp/tests.txt" > $OUT/a_gpu_each.txt 2>&1
for l in /tmp/logs/*.log; do grep -q "test result: ok" "$l" || { echo "=== $l"; tail -c 3000 "$l"; }; done > $OUT/a_gpu_fail_logs.txt
echo "phase B $(date -u +%T)"
timeout ${CLI_CAP:-100} ./devrun/cli --test-threads=16 > $OUT/b_cli.txt 2>&1; echo "rc $?" >> $OUT/b_cli.txt
echo "phase C $(date -u +%T)"
PEFT_WGPU_KERNELS=cpu timeout 70 ./devrun/lib --test-threads=16 > $OUT/c_lib_cpu.txt 2>&1; echo "rc $?" >> $OUT/c_lib_cpu.txt
echo "phase D $(date -u +%T)"
PEFT_WGPU_KERNELS=gpu timeout 50 ./devrun/lib --test-threads=16 > $OUT/d_lib_gpu_threads.txt 2>&1; echo "rc $?" >> $OUT/d_lib_gpu_threads.txt
echo "phase E $(date -u +%T)"
timeout 50 ./devrun/peft-wgpu bench --json > $OUT/e_bench.jsonl 2> $OUT/e_bench_err.txt; echo "rc $?" >> $OUT/e_bench_err.txt
echo "done $(date -u +%T)"
