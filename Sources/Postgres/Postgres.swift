// Postgres module: see Package.swift
