import time


def handle(event, context):
    seconds = float(event.body.decode().strip() or "1.5")
    time.sleep(min(seconds, 30.0))
    return {"statusCode": 200, "body": f"{seconds}", "headers": {"Content-Type": "text/plain"}}
