"""The central's web console (`edge central console`): what the attendance office works with.

    app.py        the ASGI app (Starlette): routes, static files, security headers
    auth.py       login and logout, session cookie, roles, CSRF on every POST
    pages.py      staff pages: today's board (live), a person's history, the report and its downloads, unknown
                  faces ("this is <person>"), boxes and cameras
    manage.py     admin pages: the gallery (add a person with photos, set a group, remove on every box, enroll an
                  unknown face), pushed to the boxes as signed commands
    records.py    the console's own tables (enrolment photos, reviews, push answers)
    queries.py    read-only views of the central's tables (boxes' health, a day's events)
    context.py    what every page works with (store, office, users, the MQTT side, the clock)
    templates.py  the Jinja2 templates in templates/ (server-rendered, autoescaped); static/ has the CSS and the
                  one small script (the board's live refresh)

Users and sessions are edge.central.users; the office's data (roster, corrections, report) edge.central.office. The
console never reads or shows an embedding: boxes compute them from the photos it sends.
"""
