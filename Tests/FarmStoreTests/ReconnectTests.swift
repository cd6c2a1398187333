import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation
import Postgres
import Testing

/// FarmStore's connection layer: a dropped connection is noticed, the store reconnects with
/// backoff, and callers see a wait instead of an error (issue 5, "Restart PostgreSQL mid-job").
@Suite("Store reconnect", .serialized)
struct ReconnectTests {
    @Test("a connection the server closed while idle is noticed before the next call, which succeeds")
    func terminatedBackend() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = FarmStore(url: db.url, actor: "test", reconnectSeconds: 10)
        try await store.connect()
        #expect(try await store.jobs().isEmpty)
        let admin = try PostgresConnection(url: db.url)
        // Every session of the store's application name on this database (the store has one).
        let killed = try admin.query("""
            SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = 'dubfarm-store'
            """)
        #expect(killed.count == 1)
        // A transaction, then a single statement: both go through without an error.
        let job = try await store.createJob(NewJob(videoName: "v.mp4", audioName: "a.wav"))
        #expect(try await store.job(job.id)?.videoName == "v.mp4")
        #expect(await store.reconnections == 1)
        await store.close()
    }

    @Test("PostgreSQL restarted: calls made while it is down wait for it and then succeed; none is lost or doubled")
    func serverRestart() async throws {
        let db = try await TestDatabase.createPrivate()
        defer { db.destroyPrivateCluster() }
        let store = FarmStore(url: db.url, actor: "test", reconnectSeconds: 120)
        try await store.connect()
        _ = try await store.createJob(NewJob(videoName: "before.mp4", audioName: "a.wav"))
        try db.cluster.stop()
        // Calls made while the server is down wait (on the store's own thread) for it to return.
        let pending = Task { try await store.createJob(NewJob(videoName: "during.mp4", audioName: "a.wav")) }
        try db.cluster.start()
        let during = try await pending.value
        #expect(during.videoName == "during.mp4")
        let names = try await store.jobs().map(\.videoName).sorted()
        #expect(names == ["before.mp4", "during.mp4"], "exactly one of each: \(names)")
        #expect(await store.reconnections >= 1)
        await store.close()
    }

    @Test("with no reconnect time a lost database fails the call at once with .unreachable")
    func noWait() async throws {
        let db = try await TestDatabase.createPrivate()
        defer { db.destroyPrivateCluster() }
        let store = FarmStore(url: db.url, actor: "test", reconnectSeconds: 0)
        try await store.connect()
        try db.cluster.stop()
        await #expect(throws: DubfarmError.self) { _ = try await store.jobs() }
        do { _ = try await store.jobs() } catch let e as DubfarmError {
            #expect(e.code == .unreachable)
            #expect(!e.message.isEmpty)
        }
        await store.close()
    }
}
