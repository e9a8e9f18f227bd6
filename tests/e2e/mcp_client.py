"""Thin wrappers around the official MCP Python SDK (PyPI `mcp`, 2.x)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

# Per-request bound; a whole test is also bounded by pytest-timeout.
REQUEST_TIMEOUT = 60.0


@asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    """An initialized session over Streamable HTTP."""
    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session:
            with anyio.fail_after(REQUEST_TIMEOUT):
                await session.initialize()
            yield session


@asynccontextmanager
async def sse_session(url: str) -> AsyncIterator[ClientSession]:
    """An initialized session over the legacy HTTP+SSE transport (2024-11-05)."""
    async with sse_client(url) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session:
            with anyio.fail_after(REQUEST_TIMEOUT):
                await session.initialize()
            yield session


@asynccontextmanager
async def stdio_session(command: str, args: list[str], env: dict[str, str] | None = None, cwd=None) -> AsyncIterator[ClientSession]:
    """An initialized session with a child process speaking MCP on stdio."""
    params = StdioServerParameters(command=command, args=args, env=env, cwd=cwd)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session:
            with anyio.fail_after(REQUEST_TIMEOUT):
                await session.initialize()
            yield session


def run_async(fn, *args, timeout: float = 90.0):
    """Run ``fn(*args)`` on a fresh event loop, bounded by ``timeout``."""

    async def bounded():
        with anyio.fail_after(timeout):
            return await fn(*args)

    return anyio.run(bounded)


def text_of(result) -> str:
    """Concatenated text blocks of a CallToolResult / prompt message list."""
    parts = []
    for block in getattr(result, "content", []) or []:
        t = getattr(block, "text", None)
        if t is not None:
            parts.append(t)
    return "\n".join(parts)
