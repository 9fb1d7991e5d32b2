import { memo } from 'react';
import ReactMarkdown from 'react-markdown';
import remarkGfm from 'remark-gfm';

const PLUGINS = [remarkGfm];

/**
 * The answer as Markdown, with GitHub's extensions (tables, strikethrough, task lists)
 * that models write. Raw HTML in the text is dropped, never rendered.
 */
export const Markdown = memo(function Markdown({ text }: { text: string }) {
  return (
    <ReactMarkdown skipHtml remarkPlugins={PLUGINS}>
      {text}
    </ReactMarkdown>
  );
});
