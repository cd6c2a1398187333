// FarmConfig module: see Package.swift
