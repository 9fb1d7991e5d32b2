import { memo } from 'react';
import ReactMarkdown from 'react-markdown';

/** The answer as Markdown. Raw HTML in the text is dropped, never rendered. */
export const Markdown = memo(function Markdown({ text }: { text: string }) {
  return <ReactMarkdown skipHtml>{text}</ReactMarkdown>;
});
