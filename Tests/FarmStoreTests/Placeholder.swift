import Testing

@Suite struct PlaceholderFarmStoreTests { @Test func builds() {} }
