-- wrk: POST the same body (BODY, JSON) to the URL given, as a publisher replaying
-- one signed request (Pusher REST signatures are valid for 600 s).
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
