/// The worker's side of its link to the coordinator, as pure rules: when to say READY and
/// HEARTBEAT, when the coordinator counts as silent (and how the retries back off), when a
/// stopping worker hands its work back or leaves, and when a refused key is tried again. No
/// sockets and no clock: ``WorkerNode`` feeds it events with the time since it started and
/// performs the actions it returns.
package struct WorkerLink: Sendable {
    package struct Settings: Sendable, Hashable {
        /// Between two messages to the coordinator (a HEARTBEAT when nothing else was sent).
        package var heartbeat: Duration
        /// Heartbeats the coordinator may miss before it counts as silent.
        package var liveness: Int
        /// How long a stopping worker waits for its current work before handing it back.
        package var grace: Duration
        /// The longest wait between two READYs to a silent coordinator.
        package var maxReconnect: Duration
        /// After the coordinator refused this worker's key: when to try again on a new socket
        /// (libzmq does not retry a refused handshake by itself).
        package var refusalRetry: Duration = .seconds(5)
        /// At most one log line per this long about refused handshakes.
        package var refusalLogInterval: Duration = .seconds(10)

        package init(heartbeat: Duration, liveness: Int, grace: Duration, maxReconnect: Duration) {
            self.heartbeat = heartbeat
            self.liveness = liveness
            self.grace = grace
            self.maxReconnect = maxReconnect
        }

        /// Silence longer than this means the coordinator died or restarted.
        package var silence: Duration { heartbeat * liveness }
    }

    /// What the worker is doing, as the link needs to know it.
    package enum Work: Sendable, Hashable {
        case idle
        case busy
    }

    package enum Event: Sendable, Hashable {
        /// The socket is connected and the loop starts.
        case started(at: Duration)
        /// A message went to the coordinator (any message counts as a heartbeat).
        case sent(at: Duration)
        /// A message came from the coordinator.
        case received(at: Duration)
        /// ``WorkerNode/stop()`` was called.
        case stopRequested(at: Duration)
        /// The security handshake failed: the coordinator refused our key (`authentication`),
        /// or the two sides disagree on CURVE.
        case handshakeFailed(at: Duration, authentication: Bool)
        /// Once per turn of the loop, before it waits.
        case tick(at: Duration, work: Work)
    }

    package enum Action: Sendable, Hashable {
        case sendReady
        case sendHeartbeat
        /// Grace period over: a segment stops after the frame in hand and returns the frames
        /// finished (PARTIAL); other work is stopped and handed back.
        case handBack
        /// Say DISCONNECT and end: stopping, and nothing left to finish.
        case disconnect
        /// Replace the socket with a new one (then READY follows).
        case reconnect
        case logAnswered
        case logSilent(Duration)
        case logRefused(authentication: Bool)
    }

    package let settings: Settings
    package private(set) var connected = false
    package private(set) var stopped = false
    private var lastHeard: Duration = .zero
    private var lastSent: Duration = .zero
    private var readyBackoff: Duration
    private var stopRequestedAt: Duration?
    private var handedBack = false
    private var retryRefusedAt: Duration?
    private var lastRefusalLogged: Duration?

    package init(settings: Settings) {
        self.settings = settings
        readyBackoff = settings.silence
    }

    package mutating func handle(_ event: Event) -> [Action] {
        guard !stopped else { return [] }
        switch event {
        case .started(let now):
            lastHeard = now
            lastSent = now
            return [.sendReady]
        case .sent(let now):
            lastSent = max(lastSent, now)
            return []
        case .received(let now):
            lastHeard = now
            readyBackoff = settings.silence
            guard !connected else { return [] }
            connected = true
            return [.logAnswered]
        case .stopRequested(let now):
            if stopRequestedAt == nil { stopRequestedAt = now }
            return []
        case .handshakeFailed(let now, let authentication):
            if authentication { retryRefusedAt = now + settings.refusalRetry }
            if let last = lastRefusalLogged, now - last < settings.refusalLogInterval { return [] }
            lastRefusalLogged = now
            return [.logRefused(authentication: authentication)]
        case .tick(let now, let work):
            return tick(now, work)
        }
    }

    private mutating func tick(_ now: Duration, _ work: Work) -> [Action] {
        var actions: [Action] = []
        if let stopAt = stopRequestedAt {
            if work == .idle {
                stopped = true
                return [.disconnect]
            }
            if now - stopAt > settings.grace, !handedBack {
                handedBack = true
                actions.append(.handBack)
            }
        }
        if let at = retryRefusedAt, now >= at {
            retryRefusedAt = nil
            actions += [.reconnect, .sendReady]
            // A new socket gets the whole silence window before it counts as silent.
            lastSent = now
            lastHeard = now
        }
        if now - lastSent >= settings.heartbeat {
            actions.append(.sendHeartbeat)
            lastSent = now
        }
        if now - lastHeard > readyBackoff {
            // The coordinator is silent: it died or restarted. libzmq reconnects the TCP session
            // by itself; READY again makes a new coordinator register us (and our busy segment).
            if connected { actions.append(.logSilent(settings.silence)) }
            connected = false
            actions.append(.sendReady)
            lastSent = now
            lastHeard = now
            readyBackoff = min(readyBackoff * 2, settings.maxReconnect)
        }
        return actions
    }

    /// How long the loop may wait for the socket before the next heartbeat is due (1 ms…1 s).
    package func pollTimeout(at now: Duration) -> Duration {
        min(max(settings.heartbeat - (now - lastSent), .milliseconds(1)), .seconds(1))
    }
}
