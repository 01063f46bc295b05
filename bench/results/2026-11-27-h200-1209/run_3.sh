#!/bin/bash
# Device check 3: the whole library suite with the GPUs' kernels under libtest's 16 threads,
# each output line stamped with the seconds since the start, to tell a stall from a wait.
cd "$(dirname "$0")/.."
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f $icd ] && export VK_DRIVER_FILES=$icd
export XDG_RUNTIME_DIR=/tmp RUST_BACKTRACE=0
mkdir -p /work target/release; [ "$PWD" = /work/main ] || ln -sfn "$PWD" /work/main
date -u > $OUT/when.txt
SECONDS=0
PEFT_WGPU_KERNELS=gpu timeout 280 ./devrun/lib --test-threads=16 2>&1 | while IFS= read -r l; do echo "$SECONDS $l"; done > $OUT/lib_gpu_threads16.txt
echo "rc ${PIPESTATUS[0]} after $SECONDS s" >> $OUT/lib_gpu_threads16.txt
date -u >> $OUT/when.txt
