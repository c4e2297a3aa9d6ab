"""The output family: output type name -> sink class. Config only knows these names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detector.alert.settings import OutputSettings
from detector.alert.sink import Sink
from detector.alert.sinks.file import FileSink
from detector.alert.sinks.slack import SlackSink
from detector.alert.sinks.stdout import StdoutSink
from detector.alert.sinks.webhook import WebhookSink


def _sns_sink(settings: Any) -> Sink:
    """Imported on use: boto3 and botocore add ~8 MB of RSS to every process that loads them."""
    from detector.alert.sinks.sns import SnsSink  # noqa: PLC0415

    return SnsSink(settings)


# Each class takes its own settings type; `build_sink` pairs them by `settings.kind`.
SINKS: dict[str, Callable[[Any], Sink]] = {
    "stdout": StdoutSink,
    "file": FileSink,
    "slack": SlackSink,
    "sns": _sns_sink,
    "webhook": WebhookSink,
}


def build_sink(settings: OutputSettings) -> Sink:
    """The sink for one configured output (may raise ConfigError)."""
    return SINKS[settings.kind](settings)


def build_sinks(outputs: tuple[OutputSettings, ...] | list[OutputSettings]) -> dict[str, Sink]:
    """Sinks by output name, in configuration order."""
    return {output.name: build_sink(output) for output in outputs}
