"""Just enough of the server's agent API (register, heartbeat, assignments long-poll, reports)
in memory, behind an ``httpx.MockTransport``, with switches for failures.

Used by the agent's loop and discovery tests and by the docker driver's integration test.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from theseus.api.schemas import Assignment, ReportBatch, TaskReport


class FakeServer:
    """Just enough of the server's agent API, with switches for failures."""

    def __init__(self) -> None:
        self.cluster_id = "c-1"
        self.registrations = 0
        self.heartbeats = 0
        self.forget_node = False  # next heartbeat answers 404
        self.reports_down = 0  # the next N report posts answer 503
        self.heartbeat_status: int | None = None  # heartbeats answer this status (e.g. 503)
        self.cut = False  # every request fails to connect: the network is down
        self.heartbeat_pace: float | None = None  # the interval heartbeat answers advise
        self.heartbeat_answer_delay = 0.0  # seconds a heartbeat's answer takes
        self.heartbeat_arrivals: list[float] = []  # the loop's time each heartbeat arrived
        self.poll_wait: float | None = None  # the long-poll wait assignments answers advise
        self.poll_waits: list[float] = []  # the wait each assignments long-poll asked for
        self.reports: list[TaskReport] = []
        self.index = 1
        self.tasks: list[Assignment] = []
        self.changed = asyncio.Condition()

    async def set_tasks(self, tasks: list[Assignment]) -> None:
        async with self.changed:
            self.tasks = tasks
            self.index += 1
            self.changed.notify_all()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.cut:
            raise httpx.ConnectError("the network is down", request=request)
        path = request.url.path
        if path == "/v1/agent/register":
            self.registrations += 1
            body = json.loads(request.content)
            node = {k: body[k] for k in ("name", "address", "agent_port", "driver", "cpus")}
            node.update(mem=body["mem"], port_range=body["port_range"], status="ready")
            node.update(attributes=body["attributes"], used_cpus=0.0, used_mem=0.0)
            node.update(tasks=0, registered_at=0.0)
            answer = {
                "cluster_id": self.cluster_id,
                "node": node,
                "heartbeat_interval": 0.02,
                "liveness_timeout": 1.0,
            }
            return httpx.Response(200, json=answer)
        if path.endswith("/heartbeat"):
            self.heartbeats += 1
            self.heartbeat_arrivals.append(asyncio.get_running_loop().time())
            if self.heartbeat_answer_delay:
                await asyncio.sleep(self.heartbeat_answer_delay)
            if self.heartbeat_status is not None:
                status = self.heartbeat_status
                return httpx.Response(status, json={"message": f"answered {status}"})
            if self.forget_node:
                self.forget_node = False
                return httpx.Response(404, json={"message": "unknown node"})
            if self.heartbeat_pace is None:
                return httpx.Response(200, json={})
            return httpx.Response(200, json={"heartbeat_interval": self.heartbeat_pace})
        if path.endswith("/assignments"):
            index = int(request.url.params["index"])
            wait = float(request.url.params["wait"])
            self.poll_waits.append(wait)
            async with self.changed:
                if index >= self.index:
                    try:
                        async with asyncio.timeout(wait):
                            await self.changed.wait_for(lambda: self.index > index)
                    except TimeoutError:
                        pass
                body = {
                    "index": self.index,
                    "poll_wait": self.poll_wait,
                    "tasks": [t.model_dump(mode="json") for t in self.tasks],
                }
            return httpx.Response(200, json=body)
        if path.endswith("/reports"):
            if self.reports_down:
                self.reports_down -= 1
                return httpx.Response(503, json={"message": "not the leader yet"})
            self.reports.extend(ReportBatch.model_validate_json(request.content).reports)
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"message": f"no route {path}"})

    def states(self, task_id: str) -> list[str]:
        return [r.state for r in self.reports if r.task_id == task_id]
