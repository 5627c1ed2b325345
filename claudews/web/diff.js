// A line diff (longest common subsequence), enough to show what an Edit or
// a Write changes. Large inputs fall back to "all removed, all added"
// rather than spending quadratic time and memory on them.

const MAX_CELLS = 2_000_000;

/** Lines of `before` and `after` as [{op: " " | "-" | "+", text}]. */
export function diffLines(before, after) {
  const a = splitLines(before);
  const b = splitLines(after);
  // Common head and tail first: most edits touch a few lines of many.
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length, endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  const head = a.slice(0, start).map((text) => ({ op: " ", text }));
  const tail = a.slice(endA).map((text) => ({ op: " ", text }));
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  let middle;
  if (midA.length * midB.length > MAX_CELLS) {
    middle = [...midA.map((text) => ({ op: "-", text })), ...midB.map((text) => ({ op: "+", text }))];
  } else {
    middle = lcs(midA, midB);
  }
  return [...head, ...middle, ...tail];
}

function splitLines(text) {
  if (typeof text !== "string" || text === "") return [];
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

function lcs(a, b) {
  const n = a.length, m = b.length;
  // lengths[i][j]: LCS length of a[i:] and b[j:], in one flat array.
  const width = m + 1;
  const lengths = new Uint32Array((n + 1) * width);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lengths[i * width + j] = a[i] === b[j]
        ? lengths[(i + 1) * width + j + 1] + 1
        : Math.max(lengths[(i + 1) * width + j], lengths[i * width + j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push({ op: " ", text: a[i] }); i++; j++; }
    else if (lengths[(i + 1) * width + j] >= lengths[i * width + j + 1]) out.push({ op: "-", text: a[i++] });
    else out.push({ op: "+", text: b[j++] });
  }
  while (i < n) out.push({ op: "-", text: a[i++] });
  while (j < m) out.push({ op: "+", text: b[j++] });
  return out;
}

/**
 * Keep changed lines and `context` lines around them; runs of unchanged
 * lines beyond that become one {op: "…", count} marker.
 */
export function hunks(lines, context = 3) {
  const keep = new Uint8Array(lines.length);
  lines.forEach((line, i) => {
    if (line.op !== " ") {
      for (let k = Math.max(0, i - context); k <= Math.min(lines.length - 1, i + context); k++) keep[k] = 1;
    }
  });
  const out = [];
  let skipped = 0;
  lines.forEach((line, i) => {
    if (keep[i]) {
      if (skipped) out.push({ op: "…", count: skipped });
      skipped = 0;
      out.push(line);
    } else {
      skipped++;
    }
  });
  if (skipped) out.push({ op: "…", count: skipped });
  return out;
}
