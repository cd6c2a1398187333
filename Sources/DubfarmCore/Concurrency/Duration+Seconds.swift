extension Duration {
    /// The duration in seconds, as a `Double` (for logs, metrics and rates).
    package var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
