#!/bin/sh
# Vendor the web console's third-party JavaScript into claudews/web/vendor/.
#
# The console has no build step and must work offline, so the ES module
# builds of its two dependencies are copied into the package, at pinned
# versions, with their licences. Run this (it needs npm and the npm
# registry) only to change a version, then commit claudews/web/vendor/:
#
#     scripts/vendor-web.sh
#
# npm pack fetches the published tarball and checks its integrity; the
# files are copied as published, minus the sourceMappingURL comment (the
# maps are not vendored).
set -eu

MARKED_VERSION=18.2.1       # Markdown parser, MIT
DOMPURIFY_VERSION=3.5.0     # HTML sanitiser, Apache-2.0 OR MPL-2.0

here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/claudews/web/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "marked@$MARKED_VERSION" "dompurify@$DOMPURIFY_VERSION" >/dev/null
mkdir marked dompurify
tar xzf "marked-$MARKED_VERSION.tgz" -C marked
tar xzf "dompurify-$DOMPURIFY_VERSION.tgz" -C dompurify

rm -rf "$dest"
mkdir -p "$dest"
# DOMPurify's ESM build is copied as .js, not .mjs: a module script needs a
# JavaScript MIME type, and not every server's table knows .mjs.
strip_map() { grep -v '^//# sourceMappingURL=' "$1" > "$2"; }
strip_map marked/package/lib/marked.esm.js "$dest/marked.esm.js"
cp marked/package/LICENSE "$dest/marked.LICENSE"
strip_map dompurify/package/dist/purify.es.mjs "$dest/purify.es.js"
cp dompurify/package/LICENSE "$dest/dompurify.LICENSE"
cp dompurify/package/LICENSE-MPL "$dest/dompurify.LICENSE-MPL"

cat > "$dest/VERSIONS" <<VERSIONS
# Written by scripts/vendor-web.sh; do not edit by hand.
marked $MARKED_VERSION lib/marked.esm.js (MIT, marked.LICENSE)
dompurify $DOMPURIFY_VERSION dist/purify.es.mjs as purify.es.js (Apache-2.0 OR MPL-2.0, dompurify.LICENSE)
VERSIONS
echo "vendored marked $MARKED_VERSION and dompurify $DOMPURIFY_VERSION into $dest"
