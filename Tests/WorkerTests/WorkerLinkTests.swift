import Testing
@testable import Worker

@Suite("Worker link: heartbeats, silence, grace, refused keys")
struct WorkerLinkTests {
    static let settings = WorkerLink.Settings(heartbeat: .seconds(1), liveness: 5, grace: .seconds(30), maxReconnect: .seconds(10))
    func s(_ x: Double) -> Duration { .milliseconds(Int(x * 1000)) }

    func started() -> WorkerLink {
        var link = WorkerLink(settings: Self.settings)
        #expect(link.handle(.started(at: .zero)) == [.sendReady])
        return link
    }

    @Test("READY on start; a heartbeat once a second unless something else was sent; the coordinator answering is logged once")
    func heartbeats() {
        var link = started()
        #expect(link.handle(.tick(at: s(0.5), work: .idle)).isEmpty)
        #expect(link.pollTimeout(at: s(0.5)) == s(0.5))
        #expect(link.handle(.received(at: s(0.6))) == [.logAnswered])
        #expect(link.handle(.received(at: s(0.7))).isEmpty)
        #expect(link.handle(.tick(at: s(1.0), work: .idle)) == [.sendHeartbeat])
        // A RESULT at 1.5 s counts: no heartbeat at 2.0 s, one at 2.5 s.
        _ = link.handle(.sent(at: s(1.5)))
        #expect(link.handle(.received(at: s(1.9))).isEmpty)
        #expect(link.handle(.tick(at: s(2.0), work: .busy)).isEmpty)
        #expect(link.handle(.tick(at: s(2.5), work: .busy)) == [.sendHeartbeat])
        #expect(link.pollTimeout(at: s(2.5)) == .seconds(1))
        #expect(link.pollTimeout(at: s(9)) == .milliseconds(1))
    }

    @Test("a silent coordinator: READY after 5 missed heartbeats, then backing off 10, 10 s (capped); an answer resets it")
    func silence() {
        var link = started()
        _ = link.handle(.received(at: s(0.1)))
        var readies: [Double] = []
        var silentLogged = 0
        var t = 0.0
        while t < 40 {
            t += 0.25
            let actions = link.handle(.tick(at: s(t), work: .idle))
            if actions.contains(.sendReady) { readies.append(t) }
            silentLogged += actions.filter { if case .logSilent = $0 { return true } else { return false } }.count
        }
        #expect(Array(readies.prefix(4)) == [5.25, 15.5, 25.75, 36.0], "\(readies)")
        #expect(silentLogged == 1, "logged when the link went silent, not at every retry")
        #expect(!link.connected)
        #expect(link.handle(.received(at: s(40.1))) == [.logAnswered])
        var next: Double?
        t = 40.1
        while next == nil && t < 60 {
            t += 0.25
            if link.handle(.tick(at: s(t), work: .idle)).contains(.sendReady) { next = t }
        }
        #expect(next! - 40.1 > 5 && next! - 40.1 <= 5.5, "back to 5 s after an answer: \(next!)")
    }

    @Test("stopping: idle leaves at once; busy waits out the grace, hands back once, then leaves when the work is returned")
    func stopping() {
        var idle = started()
        _ = idle.handle(.stopRequested(at: s(1)))
        #expect(idle.handle(.tick(at: s(1), work: .idle)) == [.disconnect])
        #expect(idle.stopped && idle.handle(.tick(at: s(2), work: .idle)).isEmpty)

        var busy = started()
        _ = busy.handle(.received(at: s(0.5)))
        _ = busy.handle(.stopRequested(at: s(2)))
        _ = busy.handle(.stopRequested(at: s(20)))  // a second SIGTERM does not restart the grace
        var handBacks: [Double] = []
        for t in stride(from: 2.0, through: 40, by: 0.5) {
            _ = busy.handle(.received(at: s(t)))
            if busy.handle(.tick(at: s(t), work: .busy)).contains(.handBack) { handBacks.append(t) }
        }
        #expect(handBacks == [32.5])
        #expect(busy.handle(.tick(at: s(41), work: .idle)) == [.disconnect])
    }

    @Test("a refused key: logged at most every 10 s, a new socket and READY 5 s after the last refusal")
    func refusedKey() {
        var link = started()
        #expect(link.handle(.handshakeFailed(at: s(1), authentication: true)) == [.logRefused(authentication: true)])
        #expect(link.handle(.handshakeFailed(at: s(3), authentication: true)).isEmpty)
        #expect(link.handle(.tick(at: s(5), work: .idle)) == [.sendHeartbeat])
        #expect(link.handle(.tick(at: s(8), work: .idle)) == [.reconnect, .sendReady])
        #expect(link.handle(.tick(at: s(9), work: .idle)) == [.sendHeartbeat])
        #expect(link.handle(.handshakeFailed(at: s(11.5), authentication: true)) == [.logRefused(authentication: true)])
        // A CURVE mismatch is logged but not retried on a new socket (libzmq retries it).
        var mismatch = started()
        #expect(mismatch.handle(.handshakeFailed(at: s(1), authentication: false)) == [.logRefused(authentication: false)])
        #expect(!mismatch.handle(.tick(at: s(7), work: .idle)).contains(.reconnect))
    }
}
