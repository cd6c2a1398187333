import FarmMonitor
import Foundation

/// One query loop for every dashboard viewer: while anyone watches, it reads the farm once per
/// `interval` (at once after an action, ``nudge()``) and pushes the snapshot to every subscriber
/// (the server-sent event streams), so ten open tabs cost the database what one does. Nobody
/// watching: no queries.
package actor SnapshotHub {
    let source: any MonitoringSource
    let interval: Duration
    var tracker = RateTracker()
    var subscribers: [UUID: AsyncStream<Result<FarmSnapshot, any Error>>.Continuation] = [:]
    var latest: (snapshot: FarmSnapshot, at: ContinuousClock.Instant)?
    var loop: Task<Void, Never>?
    var wake: AsyncStream<Void>.Continuation?
    /// Snapshots read from the source so far (the tests count the queries).
    package private(set) var reads = 0

    package init(source: any MonitoringSource, interval: Duration = .milliseconds(500)) {
        self.source = source
        self.interval = interval
    }

    /// A stream of snapshots (a failed read as its error, the stream going on), starting with the
    /// latest one; ends when the caller stops iterating (``unsubscribe(_:)``).
    package func subscribe() -> (UUID, AsyncStream<Result<FarmSnapshot, any Error>>) {
        let id = UUID()
        let (stream, continuation) = AsyncStream.makeStream(of: Result<FarmSnapshot, any Error>.self, bufferingPolicy: .bufferingNewest(1))
        subscribers[id] = continuation
        if let latest { continuation.yield(.success(latest.snapshot)) }
        startIfNeeded()
        return (id, stream)
    }

    package func unsubscribe(_ id: UUID) {
        subscribers.removeValue(forKey: id)?.finish()
        if subscribers.isEmpty {
            loop?.cancel()
            loop = nil
        }
    }

    /// Reads again now (an action changed something), instead of at the next tick.
    package func nudge() { wake?.yield() }

    /// The latest snapshot if younger than `maxAge`, else a fresh one (`/api/farm`).
    package func current(maxAge: Duration = .milliseconds(500)) async throws -> FarmSnapshot {
        if let latest, ContinuousClock.now - latest.at < maxAge { return latest.snapshot }
        return try await refresh()
    }

    @discardableResult
    private func refresh() async throws -> FarmSnapshot {
        reads += 1
        let snapshot = tracker.observe(try await source.snapshot())
        latest = (snapshot, .now)
        return snapshot
    }

    private func startIfNeeded() {
        guard loop == nil else { return }
        let (wakeups, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wake = continuation
        let interval = self.interval
        loop = Task { [weak self] in
            // Ticks and nudges arrive on one stream; the loop reads once per arrival.
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    continuation.yield()
                }
            }
            defer { ticker.cancel() }
            continuation.yield()
            for await _ in wakeups {
                guard let self, !Task.isCancelled else { break }
                await self.publish()
            }
        }
    }

    private func publish() async {
        let result: Result<FarmSnapshot, any Error>
        do { result = .success(try await refresh()) } catch { result = .failure(error) }
        for c in subscribers.values { c.yield(result) }
    }
}
