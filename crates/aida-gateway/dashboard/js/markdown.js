// The report's markdown as elements: headings, paragraphs, quotes, lists,
// tables, fenced code, `code` and **bold**. Enough for AIDA's own reports; the
// text is always set as text.

import { h } from "./util.js";

function inline(text) {
  const out = [];
  const re = /(`[^`]+`|\*\*[^*]+\*\*)/g;
  let at = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > at) out.push(text.slice(at, m.index));
    const t = m[0];
    out.push(t.startsWith("`") ? h("code", {}, t.slice(1, -1)) : h("strong", {}, t.slice(2, -2)));
    at = m.index + t.length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

const cells = (line) => line.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());

export function markdown(source) {
  const root = h("div.report");
  const lines = source.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      root.append(h("pre", {}, h("code", {}, code.join("\n"))));
    } else if (/^#{1,6} /.test(line)) {
      const level = Math.min(line.indexOf(" ") + 1, 6);
      root.append(h(`h${level}`, {}, inline(line.replace(/^#+ /, ""))));
    } else if (line.startsWith("|")) {
      const head = cells(line);
      const rows = [];
      for (i++; i < lines.length && lines[i].startsWith("|"); i++) {
        if (!/^\|[\s:|-]+\|?$/.test(lines[i])) rows.push(cells(lines[i]));
      }
      i--;
      root.append(h("div.table-wrap", {}, h("table", {},
        h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, inline(c))))),
        h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, inline(c)))))))));
    } else if (line.startsWith("> ")) {
      root.append(h("blockquote", {}, inline(line.slice(2))));
    } else if (/^[-*] /.test(line)) {
      const items = [];
      for (; i < lines.length && /^[-*] /.test(lines[i]); i++) items.push(h("li", {}, inline(lines[i].slice(2))));
      i--;
      root.append(h("ul", {}, items));
    } else if (line.trim()) {
      root.append(h("p", {}, inline(line)));
    }
  }
  return root;
}
