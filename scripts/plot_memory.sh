#!/usr/bin/env bash
# Plots a MemoryManager history (MemoryManager::history_csv(), as written by
# examples/video_pipeline.cpp) with gnuplot: device (or host) memory in use on top, then the
# reserved and in-use bytes of every resource, against the frame number.
#
#   scripts/plot_memory.sh memory.csv [out.png] [title]
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
  echo "usage: $0 history.csv [out.png] [title]" >&2
  exit 2
fi
csv=$1
png=${2:-${csv%.csv}.png}
title=${3:-memory over the run}
command -v gnuplot >/dev/null || { echo "$0: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
[[ -r $csv ]] || { echo "$0: cannot read $csv" >&2; exit 1; }

header=$(head -n 1 "$csv")
columns=$(awk -F, '{ print NF; exit }' <<<"$header")
rows=$(($(wc -l <"$csv") - 1))
if [[ $header != time_s,frame,device_used_bytes* || $rows -lt 1 ]]; then
  echo "$0: $csv is not a MemoryManager history (header: $header, $rows rows)" >&2
  exit 1
fi

gnuplot <<GNUPLOT
set datafile separator ","
set terminal pngcairo size 1000,700 font "sans,10" noenhanced
set output "$png"
set key outside right top
set lmargin 10
set rmargin 34
set grid
set xlabel "frame"
MiB = 1048576.0
set multiplot layout 2,1 title "$title"
set ylabel "MiB"
set title "memory in use on the watched device (host RAM when there is no GPU)"
plot "$csv" using 2:(\$3/MiB) skip 1 with linespoints pointtype 7 pointsize 0.4 title "device used"
set title "held by each resource"
if ($columns > 4) {
  plot for [i=5:$columns] "$csv" using 2:(column(i)/MiB) with lines linewidth 2 title columnheader(i)
} else {
  plot 0 title "no resources attached"
}
unset multiplot
GNUPLOT
echo "$png"
