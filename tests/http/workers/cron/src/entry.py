import json

from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    # Runs on the "triggers" of the config, or on demand through /cdn-cgi/handler/scheduled.
    async def scheduled(self, controller):
        print("Scheduled task has been executed.")
        runs = json.loads(await self.env.RUNS.get("runs") or "[]")
        runs.append({"cron": controller.cron, "time": controller.scheduledTime})
        await self.env.RUNS.put("runs", json.dumps(runs))

    async def fetch(self):
        return Response(await self.env.RUNS.get("runs") or "[]", headers={"content-type": "application/json"})
