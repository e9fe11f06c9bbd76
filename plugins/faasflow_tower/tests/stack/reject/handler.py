def handle(event, context):
    text = event.body.decode().strip()
    # a log line with markup in it: the request page must show it as text
    print(f"reject: checking <{text}>", flush=True)
    if text == "ok":
        return {"statusCode": 200, "body": "ok", "headers": {"Content-Type": "text/plain"}}
    return {"statusCode": 422, "body": f"rejected <{text}>: send ok",
            "headers": {"Content-Type": "text/plain"}}
