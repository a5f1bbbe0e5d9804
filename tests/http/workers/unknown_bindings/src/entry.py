from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        if request.url.endswith("/db"):
            rows = await self.env.DB.prepare("SELECT 1").all()
            return Response(str(rows))
        return Response("ok")
