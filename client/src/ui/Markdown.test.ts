import { createElement } from 'react';
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';

import { Markdown } from './Markdown';

const html = (text: string) => renderToStaticMarkup(createElement(Markdown, { text }));

describe('Markdown', () => {
  it('renders headings, lists, code blocks and GitHub tables', () => {
    const out = html(
      '## Setup\n\n- one\n- two\n\n```python\nprint("hi")\n```\n\n| Arch | TTFT |\n|---|---|\n| WebSocket | 300 ms |\n',
    );
    expect(out).toContain('<h2>Setup</h2>');
    expect(out).toContain('<li>one</li>');
    expect(out).toContain('<code class="language-python">');
    expect(out).toMatch(/<table>.*<th>Arch<\/th>.*<td>WebSocket<\/td>.*<\/table>/s);
  });

  it('drops raw HTML instead of rendering it', () => {
    const out = html('Hello <img src=x onerror="alert(1)"> <script>alert(2)</script>world');
    expect(out).not.toContain('<img');
    expect(out).not.toContain('<script');
    expect(out).toContain('Hello');
  });
});
