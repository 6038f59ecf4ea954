"""The machine's floor for fan-out: the CPU of one small write to a loopback TCP socket.

One process, uvloop, 1,000 connected socket pairs, a 200-byte write to each, 200 rounds; the
CPU per write (user + system, the receiving side included, since loopback delivers inside the
sender's system call) is what any server pays per delivery when it writes each socket once per
message, whatever language it is written in. The fan-out figures are read against it.
"""

from __future__ import annotations

import asyncio
import resource
import socket
from typing import Any

SOCKETS, ROUNDS, PAYLOAD = 1000, 200, b"x" * 200


async def _measure(sockets: int, rounds: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    accepted: list[asyncio.Transport] = []
    received = [0]
    expected = sockets * rounds * len(PAYLOAD)
    all_accepted, all_received = asyncio.Event(), asyncio.Event()

    class Server(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            accepted.append(transport)
            if len(accepted) == sockets:
                all_accepted.set()

    class Client(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received[0] += len(data)
            if received[0] >= expected:
                all_received.set()

    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [await loop.create_connection(Client, "127.0.0.1", port) for _ in range(sockets)]
    await asyncio.wait_for(all_accepted.wait(), 30)
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(rounds):
        for transport in accepted:
            transport.write(PAYLOAD)
        await asyncio.sleep(0)
    await asyncio.wait_for(all_received.wait(), 60)
    after = resource.getrusage(resource.RUSAGE_SELF)
    for transport, _ in clients:
        transport.close()
    server.close()
    writes = sockets * rounds
    user = (after.ru_utime - before.ru_utime) * 1e6 / writes
    system = (after.ru_stime - before.ru_stime) * 1e6 / writes
    return {"us_per_write": round(user + system, 2), "user_us": round(user, 2), "sys_us": round(system, 2)}


def measure(sockets: int = SOCKETS, rounds: int = ROUNDS) -> dict[str, float]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_measure(sockets, rounds))
    return uvloop.run(_measure(sockets, rounds))


if __name__ == "__main__":
    print(measure())
