"""Chooses the backend for each request: by name when the request names a model, else the default."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from gptactions.llm.base import (
    Backend,
    BackendState,
    ChatMessage,
    Chunk,
    Generation,
    GenerationRequest,
)


class UnknownModel(LookupError):
    """A request named a model that is not configured."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.available = list(available)


class BackendRouter:
    """The configured backends, one of them the default."""

    def __init__(self, backends: Sequence[Backend], default: str | None = None) -> None:
        if not backends:
            raise ValueError("at least one backend is required")
        self.backends: dict[str, Backend] = {b.name: b for b in backends}
        self.default = default or backends[0].name
        if self.default not in self.backends:
            raise ValueError(f"default backend {self.default!r} is not configured")

    @property
    def names(self) -> list[str]:
        """The names a request may give as `model`."""
        return list(self.backends)

    def resolve(self, model: str | None = None) -> Backend:
        """The backend for a request's optional `model` field."""
        name = model or self.default
        try:
            return self.backends[name]
        except KeyError:
            raise UnknownModel(name, self.names) from None

    async def start(self) -> None:
        """Start every backend."""
        for backend in self.backends.values():
            await backend.start()

    async def close(self) -> None:
        """Close every backend."""
        for backend in self.backends.values():
            await backend.close()

    async def generate(self, request: GenerationRequest, model: str | None = None) -> Generation:
        """Generate with the chosen backend."""
        return await self.resolve(model).generate(request)

    def stream(self, request: GenerationRequest, model: str | None = None) -> AsyncIterator[Chunk]:
        """Stream with the chosen backend."""
        return self.resolve(model).stream(request)

    async def count_tokens(self, messages: tuple[ChatMessage, ...], model: str | None = None) -> int:
        """Tokens the messages take in the chosen backend's model."""
        return await self.resolve(model).count_tokens(messages)

    def context_window(self, model: str | None = None) -> int:
        """The chosen backend's context window, in tokens."""
        return self.resolve(model).context_window

    async def states(self) -> list[BackendState]:
        """Every backend's state, default first."""
        ordered = [self.default, *(n for n in self.backends if n != self.default)]
        return [await self.backends[name].state() for name in ordered]
