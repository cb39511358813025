"""Containment: the only door to a user's model.

Everything that touches the model (loading the file, reading the tables it is scored on, scoring, and the
refits of its recipe) runs in a fresh child process confined by :mod:`.confine` (rlimits, an unprivileged
user, Landlock, seccomp), talking to the audit through :mod:`.protocol` (JSON and numeric arrays, never
pickle). :mod:`.session` is the audit's side (``open_model``); :mod:`.stage` is the work and its messages;
:mod:`.child` is the confined process. Nothing is imported here, so that the child loads only what it uses.
"""
