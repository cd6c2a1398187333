import Testing

@Suite struct PlaceholderEngineTests { @Test func builds() {} }
