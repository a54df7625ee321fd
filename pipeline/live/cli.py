"""``callpulse serve`` and ``callpulse replay``."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

from ..batch import add_common_options, config_from_args
from ..config import load_config

log = logging.getLogger("pipeline.live.cli")


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the live service (taps, API, feed, dashboard)",
                                  description="Run the live service. Binds 127.0.0.1 by default.")
    # The engine options batch takes too (one engine, one config); --agent-channel here says which
    # channel of an audio-fork stereo stream is the agent.
    add_common_options(serve)
    serve.add_argument("--host", help="address to bind (default [live] host)")
    serve.add_argument("--port", type=int, help="HTTP/WebSocket port (default [live] port; 0 = any free)")
    serve.add_argument("--sip-port", type=int, help="SIP UDP port (default [live] sip_port; -1 = no SIP)")
    serve.add_argument("--audiosocket-port", type=int, help="AudioSocket TCP port (-1 = none)")
    serve.add_argument("--database", help="SQLite file, or postgresql://user@host/db shared by several workers, "
                       "for calls, alerts, agent shifts and the webhook outbox")
    serve.add_argument("--webhook", action="append", default=[], help="webhook URL (repeatable; adds to config)")
    serve.add_argument("--insecure", action="store_true",
                       help="run without a token (loopback addresses only)")
    serve.set_defaults(func=run_serve)

    replay = subparsers.add_parser("replay", help="stream a recorded stereo call into a tap",
                                   description="Stream a stereo call WAV into callpulse serve in a tap format.")
    replay.add_argument("wav", help="stereo call recording (agent and caller on separate channels)")
    replay.add_argument("--format", required=True, choices=("audio-fork", "twilio", "audiosocket", "sip", "siprec",
                                                                     "audiohook"))
    replay.add_argument("--to", required=True,
                        help="ws://host:port/tap/audio-fork, ws://host:port/tap/twilio, host:port (audiosocket), "
                             "sip:analyze@host:port")
    replay.add_argument("--agent-id")
    replay.add_argument("--call-id")
    replay.add_argument("--agent-channel", type=int, choices=(0, 1), help="default [audio] agent_channel")
    replay.add_argument("--realtime", action="store_true", help="pace at real time (else as fast as possible)")
    replay.add_argument("--speed", type=float, help="pace at this multiple of real time")
    replay.add_argument("--token", help="default $CALLPULSE_TOKEN")
    replay.add_argument("--api", help="http://host:port of serve: wait for the call's JSON and print it")
    replay.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the result (--api)")
    replay.add_argument("--config", help="TOML file (for [audio] agent_channel)")
    replay.set_defaults(func=run_replay)


def run_serve(args: argparse.Namespace) -> int:
    overrides: dict = {}
    for name, key in (("host", "host"), ("port", "port"), ("database", "database")):
        if getattr(args, name) is not None:
            overrides[key] = getattr(args, name)
    if args.sip_port is not None:
        overrides["sip_enabled"] = args.sip_port >= 0
        overrides["sip_port"] = max(args.sip_port, 0)
    if args.audiosocket_port is not None:
        overrides["audiosocket_enabled"] = args.audiosocket_port >= 0
        overrides["audiosocket_port"] = max(args.audiosocket_port, 0)
    config = config_from_args(args)
    if args.language and args.language != "auto":
        config = config.replace("asr", language=args.language)
    if args.agent_channel is not None:
        overrides["audio_fork_stereo_roles"] = ("agent", "caller") if args.agent_channel == 0 else ("caller", "agent")
    if args.webhook:
        overrides["webhook_urls"] = tuple(config.live.webhook_urls) + tuple(args.webhook)
    if overrides:
        config = config.replace("live", **overrides)
    return asyncio.run(_serve(config, insecure=args.insecure))


async def _serve(config, *, insecure: bool) -> int:
    from .server import LiveService

    service = LiveService.from_config(config, insecure=insecure)
    bound = await service.start()
    tok = "?token=<token>" if service.token else ""
    print(f"callpulse serve: dashboard {bound.http}/{tok}", flush=True)
    print(f"  audio-fork   {bound.ws}/tap/audio-fork   (subprotocol audio.drachtio.org)", flush=True)
    print(f"  twilio       {bound.ws}/tap/twilio", flush=True)
    if bound.audiosocket_port is not None:
        print(f"  audiosocket  tcp://{bound.host}:{bound.audiosocket_port}", flush=True)
    if bound.sip_port is not None:
        print(f"  sip/siprec   sip:analyze@{bound.host}:{bound.sip_port}", flush=True)
    print(f"  api          {bound.http}/api/health  feed {bound.http}/api/feed", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("callpulse serve: stopping (finalising live calls)", flush=True)
    await service.stop()
    return 0


def run_replay(args: argparse.Namespace) -> int:
    import aiohttp

    from .replay import CallRefusedError, ReplayCall, replay, wait_for_result

    config = load_config(args.config)
    agent_channel = args.agent_channel if args.agent_channel is not None else config.audio.agent_channel
    call = ReplayCall.from_file(args.wav, agent_channel=agent_channel, call_id=args.call_id, agent_id=args.agent_id)
    token = args.token or os.environ.get("CALLPULSE_TOKEN")
    speed = args.speed if args.speed is not None else (1.0 if args.realtime else 0.0)

    async def go() -> dict | None:
        call_id = await replay(call, fmt=args.format, to=args.to, token=token, speed=speed)
        if args.api:
            return await wait_for_result(args.api, call_id, token=token, timeout_s=args.timeout)
        return None

    print(f"callpulse replay: call {call.call_id} -> {args.to} ({args.format})", file=sys.stderr, flush=True)
    try:
        result = asyncio.run(go())
    except CallRefusedError as exc:
        # exit 3: the call was not taken (or was cut); a script can tell it from a bad argument (2)
        print(f"callpulse replay: call refused: {exc}", file=sys.stderr, flush=True)
        return 3
    except (OSError, aiohttp.ClientError) as exc:  # nothing listening there, or the connection died
        print(f"callpulse replay: could not stream to {args.to}: {exc}", file=sys.stderr, flush=True)
        return 3
    if result is not None:
        json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
        print()
    return 0
