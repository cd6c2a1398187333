// FarmClient module: see Package.swift
