"""CDK stacks of the llm-stream project (DESIGN.md §2)."""

from stacks.llm_stream_stack import LlmStreamStack

__all__ = ["LlmStreamStack"]
