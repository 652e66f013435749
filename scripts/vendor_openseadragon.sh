#!/usr/bin/env bash
# Vendor OpenSeadragon for the mosaic viewer (src/mosaicist/viewer/assets/).
#
# Downloads the pinned release from the npm registry with `npm pack`, checks
# the tarball against the pinned integrity and the registry's
# `dist.integrity`, and copies out the minified library, its licence and the
# navigation button images the viewer uses. Run it from anywhere; it rewrites
# src/mosaicist/viewer/assets/ (its README.md included).
set -euo pipefail

VERSION=6.1.1
INTEGRITY="sha512-g4iKe2q8B642SaBT3+x4ZF3/8b1TxPPydyjmtrOLgDrlYWMKd9ZXM+1Cb/xa9DVySkvs/7l6HR1nHKfD5F3Tsw=="
# The navigation buttons OpenSeadragon shows by default, in their four states.
BUTTONS=(zoomin zoomout home fullpage)
STATES=(rest grouphover hover pressed)

cd "$(dirname "$0")/.."
dest=src/mosaicist/viewer/assets
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

registry=$(npm view "openseadragon@$VERSION" dist.integrity)
if [[ "$registry" != "$INTEGRITY" ]]; then
    echo "vendor_openseadragon: the registry's integrity for $VERSION is $registry," >&2
    echo "vendor_openseadragon: not the pinned $INTEGRITY" >&2
    exit 1
fi
(cd "$work" && npm pack --silent "openseadragon@$VERSION" >/dev/null)
tarball="$work/openseadragon-$VERSION.tgz"
actual="sha512-$(python3 -c 'import base64, hashlib, sys
print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' \
    "$tarball")"
if [[ "$actual" != "$INTEGRITY" ]]; then
    echo "vendor_openseadragon: $tarball has integrity $actual, expected $INTEGRITY" >&2
    exit 1
fi

tar -xzf "$tarball" -C "$work"
package="$work/package"
rm -rf "$dest/images"
mkdir -p "$dest/images"
cp "$package/build/openseadragon/openseadragon.min.js" "$dest/openseadragon.min.js"
cp "$package/LICENSE.txt" "$dest/LICENSE.txt"
for button in "${BUTTONS[@]}"; do
    for state in "${STATES[@]}"; do
        cp "$package/build/openseadragon/images/${button}_${state}.png" "$dest/images/"
    done
done

cat > "$dest/README.md" <<README
# Vendored OpenSeadragon

The mosaic viewer (\`mosaicist/viewer.py\`) inlines these files into each
\`NAME.html\`, so that the page works offline, also when opened from disk.

- **What:** [OpenSeadragon](https://openseadragon.github.io/) $VERSION:
  \`openseadragon.min.js\` and the navigation button images
  \`images/{$(IFS=,; echo "${BUTTONS[*]}")}_{$(IFS=,; echo "${STATES[*]}")}.png\`,
  unchanged.
- **Source:** the npm package \`openseadragon@$VERSION\`
  (\`build/openseadragon/\` and \`LICENSE.txt\` of its tarball), integrity
  \`$INTEGRITY\`.
- **Licence:** BSD-3-Clause, see [LICENSE.txt](LICENSE.txt).

Reproduce with \`bash scripts/vendor_openseadragon.sh\` (needs \`npm\`); it
checks the tarball against the pinned integrity and the registry's.
README

echo "vendored openseadragon $VERSION into $dest"
