"""Trust checks: pure computations over what clients send and what the app serves (no database, no web).

Each module takes plain values (sessions, counts, bytes) and returns numbers and verdicts; the services read
the rows and act on the outcome. ``clusters``: sessions grouped by the address they joined from.
``collusion``: a cluster whose sessions lean to one model far more than the study's other sessions.
``sensitivity``: whether dropping one cluster changes a criterion's verdict.
"""
