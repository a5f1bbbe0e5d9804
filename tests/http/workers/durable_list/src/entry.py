import json
from urllib.parse import urlparse

from workers import DurableObject, Response, WorkerEntrypoint


class List(DurableObject):
    async def items(self):
        stored = await self.ctx.storage.get("items")
        return json.loads(stored) if stored else []

    async def append(self, item):
        items = await self.items()
        items.append(item)
        await self.ctx.storage.put("items", json.dumps(items))

    async def alarm(self, alarm_info=None):
        await self.append("alarm")


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        parts = urlparse(request.url).path.strip("/").split("/")
        if not parts[0]:
            return Response("list name missing", status=400)
        stub = self.env.LISTS.get(self.env.LISTS.idFromName(parts[0]))
        if len(parts) == 3 and parts[1] == "add":
            await stub.append(parts[2])
            return Response("added")
        if len(parts) == 2 and parts[1] == "show":
            return Response("\n".join(await stub.items()) or "empty")
        return Response("Not Found", status=404)
