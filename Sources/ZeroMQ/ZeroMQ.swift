// ZeroMQ module: see Package.swift
