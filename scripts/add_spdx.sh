#!/usr/bin/env bash
# Puts the SPDX licence line at the top of every header under include/ that lacks one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
find include -name '*.hpp' -o -name '*.cuh' | while read -r f; do
  head -n 3 "$f" | grep -q 'SPDX-License-Identifier: MIT' && continue
  { echo '// SPDX-License-Identifier: MIT'; cat "$f"; } > "$f.spdx" && mv "$f.spdx" "$f"
done
