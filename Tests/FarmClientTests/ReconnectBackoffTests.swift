import DubfarmCore
import FarmClient
import Testing

@Suite("Reconnecting to a coordinator that went away")
struct ReconnectBackoffTests {
    @Test("delays double from half a second up to ten seconds")
    func schedule() {
        var b = ReconnectBackoff()
        let delays = (0..<8).compactMap { _ in b.next(elapsed: 0, patience: 600) }
        #expect(delays == [0.5, 1, 2, 4, 8, 10, 10, 10])
    }

    @Test("the last delay ends at the deadline, and none is given past it")
    func deadline() {
        var b = ReconnectBackoff()
        for _ in 0..<5 { _ = b.next(elapsed: 0, patience: 600) }
        #expect(b.next(elapsed: 597, patience: 600) == 3)
        #expect(b.next(elapsed: 600, patience: 600) == nil)
        var none = ReconnectBackoff()
        #expect(none.next(elapsed: 0, patience: 0) == nil)
    }

    @Test("only an unreachable or busy coordinator is worth waiting for")
    func transient() {
        #expect(ReconnectingClient.isTransient(DubfarmError(.unreachable, "gone")))
        #expect(ReconnectingClient.isTransient(DubfarmError(.timeout, "busy")))
        #expect(!ReconnectingClient.isTransient(DubfarmError(.notFound, "job 9 does not exist")))
        #expect(!ReconnectingClient.isTransient(DubfarmError(.badInput, "bad")))
    }
}
