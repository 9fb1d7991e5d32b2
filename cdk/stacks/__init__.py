"""CDK stacks of the llm-stream project (docs/architecture.md)."""

from stacks.llm_stream_stack import LlmStreamStack

__all__ = ["LlmStreamStack"]
