import DubfarmCore
import Testing
@testable import Coordinator

@Suite("Coordinator job cache: open media and result logs, least recently used closed first")
struct JobCacheTests {
    final class Thing {
        let job: Int64
        init(_ job: Int64) { self.job = job }
    }
    typealias Cache = JobCache<Thing, Thing>
    let t0 = ContinuousClock.now

    @Test("media is served while open; the least recently used goes when a ninth job's opens")
    func mediaLRU() {
        var c = Cache()
        for j in Int64(1)...8 {
            let open = c.media(for: JobID(j), now: t0)
            #expect(open == nil)
            c.insert(media: Thing(j), for: JobID(j), now: t0 + .seconds(Int(j)))
        }
        let first = c.media(for: JobID(1), now: t0 + .seconds(20))
        #expect(first?.job == 1)
        c.insert(media: Thing(9), for: JobID(9), now: t0 + .seconds(21))
        #expect(c.hasMedia(JobID(1)) && !c.hasMedia(JobID(2)) && c.hasMedia(JobID(9)))
        c.insert(media: Thing(9), for: JobID(9), now: t0 + .seconds(22))   // the same job again: nothing closed
        #expect((1...9).filter { c.hasMedia(JobID(Int64($0))) }.count == 8)
    }

    @Test("a seventeenth log closes one whose job's media is closed, never one in use")
    func logs() {
        var c = Cache()
        c.insert(media: Thing(1), for: JobID(1), now: t0)
        for j in Int64(1)...16 { _ = c.log(for: JobID(j)) { Thing(j) } }
        _ = c.log(for: JobID(17)) { Thing(17) }
        #expect(c.hasLog(JobID(1)) && c.hasLog(JobID(17)))
        #expect((2...16).filter { !c.hasLog(JobID(Int64($0))) }.count == 1)
        c.closeLog(JobID(1))
        #expect(!c.hasLog(JobID(1)) && c.hasMedia(JobID(1)))
    }

    @Test("jobs unused for two minutes are closed by the sweep, media and log")
    func sweep() {
        var c = Cache()
        c.insert(media: Thing(1), for: JobID(1), now: t0)
        c.insert(media: Thing(2), for: JobID(2), now: t0 + .seconds(100))
        _ = c.log(for: JobID(1)) { Thing(1) }
        c.sweep(now: t0 + .seconds(121))
        #expect(!c.hasMedia(JobID(1)) && !c.hasLog(JobID(1)) && c.hasMedia(JobID(2)))
        c.close(JobID(2))
        #expect(!c.hasMedia(JobID(2)))
    }
}
