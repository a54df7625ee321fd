"""[live] options: the service's addresses, security, tap mappings, buffering and webhooks."""
from __future__ import annotations

from dataclasses import dataclass

ROLES = ("agent", "caller")


@dataclass(frozen=True)
class LiveOptions:
    """[live] options (defaults equal ``pipeline/callpulse.toml``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    sip_enabled: bool = True
    sip_port: int = 5070
    audiosocket_enabled: bool = True
    audiosocket_port: int = 9092
    token: str = ""
    sip_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    audiosocket_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    database: str = "callpulse-live.sqlite"
    results_dir: str = ""
    max_calls: int = 64
    max_calls_per_source: int = 32
    max_calls_per_tap: int = 48
    idle_timeout_s: float = 15.0
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 16384
    checkpoint_interval_s: float = 5.0
    webhook_secret: str = ""
    max_frame_bytes: int = 65536
    call_id_keys: tuple[str, ...] = ("callId", "call_id", "uuid", "callSid", "sessionId")
    agent_id_keys: tuple[str, ...] = ("agentId", "agent_id", "agent")
    audio_fork_mono_role: str = "caller"
    audio_fork_stereo_roles: tuple[str, ...] = ("caller", "agent")
    twilio_inbound_role: str = "caller"
    audiosocket_roles: tuple[str, ...] = ("caller", "agent")
    sip_single_stream_role: str = "caller"
    sip_agent_headers: tuple[str, ...] = ("X-Agent-Id",)
    siprec_agent_pattern: str = "agent"
    jitter_buffer_ms: int = 60
    rtp_max_gap_s: float = 5.0
    rtp_idle_timeout_s: float = 30.0
    max_skew_ms: int = 400
    max_backlog_s: float = 30.0
    lag_warn_s: float = 3.0
    workers: int = 2
    asr_mode: str = "deferred"
    asr_workers: int = 1
    asr_batch: int = 0  # windows per batched ASR call (pipeline/live/asr_pool.py); 0 = auto: 8 on a GPU, 1 on CPU
    asr_batch_per_call: int = 2  # fairness: at most this many windows of one call in one batch
    recent_calls: int = 50
    transcript_tail: int = 6
    feed_queue: int = 512
    webhook_urls: tuple[str, ...] = ()
    webhook_states: tuple[str, ...] = ("raised",)
    webhook_timeout_s: float = 5.0
    webhook_backoff_initial_s: float = 1.0
    webhook_backoff_max_s: float = 60.0
    # Several workers on one PostgreSQL (pipeline.live.floor); unused on SQLite.
    worker_id: str = ""
    worker_heartbeat_s: float = 1.0
    worker_dead_after_s: float = 10.0
    webhook_lease_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("audio_fork_mono_role", "twilio_inbound_role", "sip_single_stream_role"):
            value = getattr(self, name)
            if value not in ROLES + (("mixed",) if name == "sip_single_stream_role" else ()):
                raise ValueError(f"live.{name} must be one of {ROLES}, got {value!r}")
        for name in ("audio_fork_stereo_roles", "audiosocket_roles"):
            value = tuple(getattr(self, name))
            if sorted(value) != sorted(ROLES):
                raise ValueError(f"live.{name} must name each of {ROLES} once, got {value!r}")
        for name in ("port", "sip_port", "audiosocket_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"live.{name} must be 0..65535 (0 = any free port)")
        if self.max_frame_bytes < 1024:
            raise ValueError("live.max_frame_bytes must be at least 1024")
        if self.workers < 1 or self.max_calls < 1:
            raise ValueError("live.workers and live.max_calls must be at least 1")
        if self.max_calls_per_source < 1 or self.max_calls_per_tap < 1:
            raise ValueError("live.max_calls_per_source and live.max_calls_per_tap must be at least 1")
        if self.idle_timeout_s <= 0 or self.checkpoint_interval_s <= 0:
            raise ValueError("live.idle_timeout_s and live.checkpoint_interval_s must be > 0 seconds")
        if not 256 <= self.max_body_bytes <= 1 << 20:
            raise ValueError("live.max_body_bytes must be 256..1048576")
        if self.asr_mode not in ("deferred", "inline"):
            raise ValueError(f"live.asr_mode must be 'deferred' or 'inline', got {self.asr_mode!r}")
        if self.asr_workers < 1 or self.asr_batch < 0 or self.asr_batch_per_call < 1:
            raise ValueError("live.asr_workers and live.asr_batch_per_call must be at least 1, live.asr_batch >= 0 "
                             "(0 = auto)")
        if self.jitter_buffer_ms < 0 or self.max_skew_ms < 20:
            raise ValueError("live.jitter_buffer_ms must be >= 0 and live.max_skew_ms >= 20")
        for state in self.webhook_states:
            if state not in ("raised", "cleared"):
                raise ValueError(f"live.webhook_states holds 'raised' and/or 'cleared', got {state!r}")
        if self.webhook_backoff_initial_s <= 0 or self.webhook_backoff_max_s < self.webhook_backoff_initial_s:
            raise ValueError("live.webhook_backoff_initial_s must be > 0 and <= webhook_backoff_max_s")
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError("live.webhook_lease_s must be longer than live.webhook_timeout_s (a claim must outlast "
                             "the POST it covers, or a second worker could send the same alert)")
        if self.worker_heartbeat_s <= 0 or self.worker_dead_after_s < 2 * self.worker_heartbeat_s:
            raise ValueError("live.worker_heartbeat_s must be > 0 and live.worker_dead_after_s at least twice it")
        if len(self.worker_id) > 128:
            raise ValueError("live.worker_id is at most 128 characters")

    @property
    def twilio_outbound_role(self) -> str:
        return "agent" if self.twilio_inbound_role == "caller" else "caller"
