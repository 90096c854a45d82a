"""The launch room: what a job needs from its launcher (preemption and requeue, job slots, the sweep summary).

Imported by the training CLI only; the core takes the signals to ignore as an argument instead.
"""
