"""Seeing into a running box: the status file the daemon writes each tick (`edge status`), the doctor's checks
(`edge doctor`) and the optional local metrics and health endpoint. These modules read the daemon's products
(its status file, database, config); the pipeline never imports them, the daemon only hands them data."""
