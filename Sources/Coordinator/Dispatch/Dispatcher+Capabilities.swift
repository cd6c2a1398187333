import DubfarmCore

extension Dispatcher {
    /// What the connected workers can run (for `status`/`jobs` to explain work that no
    /// connected worker can take). The claim itself filters in SQL (`FarmStore.claimSegment`).
    func capabilities() -> [WorkerCapabilities] {
        peers.capabilities()
    }
}
