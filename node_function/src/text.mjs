/**
 * Small string helpers shared by the frame and flush code.
 *
 * JavaScript strings are UTF-16; the protocol counts lengths in Unicode code
 * points (as Python's len() does), so a 🚀 counts as one and is never split.
 */

/** @param {string} s */
export function codePointLength(s) {
  let n = 0;
  for (const _ of s) n += 1; // iterates code points, not UTF-16 units
  return n;
}

// Python's str.isspace(): Unicode White_Space plus the ASCII separators 0x1c-0x1f.
const PY_BLANK = /^[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;

/** True when Python's ``not s.strip()`` would be true. */
export function isBlank(/** @type {string} */ s) {
  return PY_BLANK.test(s);
}

/**
 * A Python-style repr() of a string, so messages read the same as the Python
 * side's (e.g. unknown field 'topP').
 * @param {string} s
 */
export function pyRepr(s) {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const c = /** @type {number} */ (ch.codePointAt(0));
    if (ch === '\\' || ch === quote) out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || (c >= 0x7f && c < 0xa0)) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return out + quote;
}

/** A Python-style list repr of strings: ['a', 'b']. */
export function pyList(/** @type {string[]} */ items) {
  return `[${items.map(pyRepr).join(', ')}]`;
}

/** Sort the way Python sorts strings (by code point). */
export function pySorted(/** @type {Iterable<string>} */ items) {
  return [...items].sort((a, b) => {
    const x = Array.from(a, (ch) => /** @type {number} */ (ch.codePointAt(0)));
    const y = Array.from(b, (ch) => /** @type {number} */ (ch.codePointAt(0)));
    for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
      if (x[i] !== y[i]) return x[i] - y[i];
    }
    return x.length - y.length;
  });
}

/** Thousands separators like Python's f"{n:,}". */
export function withCommas(/** @type {number} */ n) {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}
