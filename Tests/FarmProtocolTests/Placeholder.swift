import Testing

@Suite struct PlaceholderFarmProtocolTests { @Test func builds() {} }
