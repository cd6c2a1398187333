import DubfarmCore

/// What the dispatcher keeps open per job between tasks: the job's media (to cut tasks) and its
/// result log (to store results), with the rules for closing them.
///
/// - At most ``maxMedia`` jobs' media stay open; opening another closes the least recently used.
/// - At most ``maxLogs`` result logs stay open; opening another closes one whose job's media is
///   closed (a log in use is never closed under a writer, and is opened again when needed).
/// - ``sweep(now:)`` closes both for jobs not used for ``idleTimeout``.
///
/// Pure (generic over what it holds) so the rules are tested without files or a database.
struct JobCache<Media, Log> {
    static var maxMedia: Int { 8 }
    static var maxLogs: Int { 16 }
    static var idleTimeout: Duration { .seconds(120) }

    private var media: [JobID: (value: Media, lastUsed: ContinuousClock.Instant)] = [:]
    private var logs: [JobID: Log] = [:]

    /// Job `job`'s media if it is open; counts as a use at `now`.
    mutating func media(for job: JobID, now: ContinuousClock.Instant) -> Media? {
        guard let cached = media[job] else { return nil }
        media[job]!.lastUsed = now
        return cached.value
    }

    /// Keeps `value`, just opened, as job `job`'s media (used at `now`), closing the least
    /// recently used when ``maxMedia`` are open.
    mutating func insert(media value: Media, for job: JobID, now: ContinuousClock.Instant) {
        if media[job] == nil, media.count >= Self.maxMedia, let oldest = media.min(by: { $0.value.lastUsed < $1.value.lastUsed }) {
            media[oldest.key] = nil
        }
        media[job] = (value, now)
    }

    /// Job `job`'s result log, opened with `open` when it is not open.
    mutating func log(for job: JobID, open: () throws -> Log) rethrows -> Log {
        if let log = logs[job] { return log }
        let log = try open()
        if logs.count >= Self.maxLogs, let idle = logs.keys.first(where: { media[$0] == nil }) { logs[idle] = nil }
        logs[job] = log
        return log
    }

    /// Whether job `job`'s result log is open.
    func hasLog(_ job: JobID) -> Bool { logs[job] != nil }
    /// Whether job `job`'s media is open.
    func hasMedia(_ job: JobID) -> Bool { media[job] != nil }

    /// Closes job `job`'s media (it failed or its media is unusable); its log stays open.
    mutating func closeMedia(_ job: JobID) { media[job] = nil }
    /// Closes job `job`'s result log (all its results are in: the stitch may remove it).
    mutating func closeLog(_ job: JobID) { logs[job] = nil }
    /// Closes both (the job ended).
    mutating func close(_ job: JobID) {
        media[job] = nil
        logs[job] = nil
    }

    /// Closes the media and logs of jobs not used since ``idleTimeout`` before `now`.
    mutating func sweep(now: ContinuousClock.Instant) {
        for (job, entry) in media where now - entry.lastUsed > Self.idleTimeout { close(job) }
    }
}
