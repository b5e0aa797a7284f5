# The compiled twin (_ext/timerwheel.pyx) has the API described in gateway/timers.pyi.
from gateway.timers import TimerHandle as TimerHandle, TimerWheel as TimerWheel
