#!/bin/bash
# Device check 2: each kernel's pipeline build time, each in a process of its own, and the
# rows filter test alone with a longer limit.
cd "$(dirname "$0")/.."
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f $icd ] && export VK_DRIVER_FILES=$icd
export XDG_RUNTIME_DIR=/tmp RUST_BACKTRACE=0
mkdir -p /work target/release; [ "$PWD" = /work/main ] || ln -sfn "$PWD" /work/main
date -u > $OUT/when.txt
( t0=$(date +%s); PEFT_WGPU_KERNELS=gpu timeout 170 ./devrun/lib --exact t_spectral_rows::rows_filter_and_grads_match_reference > $OUT/rows_test.txt 2>&1; echo "rc $? after $(( $(date +%s) - t0 )) s" >> $OUT/rows_test.txt ) &
./devrun/kbt --list > /tmp/kernels.txt
timeout 170 xargs -P 6 -I{} bash -c 't0=$(date +%s.%N); timeout 160 ./devrun/kbt {} > /tmp/k_{}.txt 2>&1; echo "$? $(awk "BEGIN{print $(date +%s.%N) - $t0}") {} $(tail -n1 /tmp/k_{}.txt)"' < /tmp/kernels.txt > $OUT/build_times.txt 2>&1
wait
date -u >> $OUT/when.txt
