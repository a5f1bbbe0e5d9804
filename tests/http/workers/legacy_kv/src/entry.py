from js import Response


async def on_fetch(request, env):
    name = request.url.split("/")[-1] or "bar"
    await env.FOO.put(name, "stored " + name)
    value = await env.FOO.get(name)
    return Response.new(value)
