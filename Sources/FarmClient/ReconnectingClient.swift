import DubfarmCore
import Foundation

/// The delays between attempts to reach a coordinator that went away: 0.5 s doubling to 10 s,
/// within a total patience. Pure, so its schedule is tested without sockets.
package struct ReconnectBackoff: Sendable, Hashable {
    package var first: Double = 0.5
    package var maximum: Double = 10
    package private(set) var attempts = 0

    package init(first: Double = 0.5, maximum: Double = 10) {
        self.first = first
        self.maximum = maximum
    }

    /// The next delay, or `nil` when `elapsed + delay` would pass `patience`: then the caller
    /// makes one last attempt at the deadline (if any time is left) and gives up.
    package mutating func next(elapsed: Double, patience: Double) -> Double? {
        let delay = min(maximum, first * pow(2, Double(attempts)))
        attempts += 1
        let left = patience - elapsed
        guard left > 0 else { return nil }
        return min(delay, left)
    }
}

/// A control connection that survives the coordinator going away for a while: `resilient`
/// retries a call that found the coordinator unreachable, reconnecting with backoff (a new
/// connection each time, so a coordinator that came back at another address is found too), for
/// up to `patience` seconds, saying so once in `notice`.
///
/// Used by the commands that wait (`submit --wait`, `wait`): the farm carries on while its
/// coordinator restarts, and so should they.
package final class ReconnectingClient {
    package private(set) var client: ControlClient
    let connect: () throws -> ControlClient
    /// Seconds to keep trying after the coordinator stops answering (0: fail at once).
    package let patience: Double
    let notice: (String) -> Void

    package init(patience: Double, notice: @escaping (String) -> Void, connect: @escaping () throws -> ControlClient) throws {
        self.patience = patience
        self.notice = notice
        self.connect = connect
        client = try connect()
    }

    /// Whether an error means "try again later": the coordinator did not answer or was busy.
    package static func isTransient(_ e: Error) -> Bool {
        guard let e = e as? DubfarmError else { return false }
        return e.code == .unreachable || e.code == .timeout
    }

    /// Runs `body` on the current connection; while it fails because the coordinator is
    /// unreachable, reconnects and tries again, until `patience` runs out (then the last error).
    package func resilient<T>(_ body: (ControlClient) throws -> T) throws -> T {
        do { return try body(client) } catch where Self.isTransient(error) && patience > 0 {
            let started = ContinuousClock.now
            let endpoint = client.endpoint
            notice("lost the coordinator at \(endpoint) (\((error as? DubfarmError)?.message ?? "\(error)")); "
                   + "reconnecting for up to \(Self.format(patience)) — the job carries on without us")
            var backoff = ReconnectBackoff()
            var last = error
            while true {
                let elapsed = (ContinuousClock.now - started).seconds
                guard let delay = backoff.next(elapsed: elapsed, patience: patience) else { throw last }
                Thread.sleep(forTimeInterval: delay)
                do {
                    let fresh = try connect()
                    // A short wait per attempt: a coordinator that is back answers at once.
                    fresh.timeout = min(fresh.timeout, max(1, patience - (ContinuousClock.now - started).seconds))
                    let value = try body(fresh)
                    fresh.timeout = client.timeout
                    client = fresh
                    notice("reconnected to the coordinator at \(fresh.endpoint) after \(Self.format((ContinuousClock.now - started).seconds))")
                    return value
                } catch where Self.isTransient(error) {
                    last = error
                }
            }
        }
    }

    static func format(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 120 ? "\(s / 60) min" : "\(s) s"
    }
}
