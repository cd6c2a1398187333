// BLAS module: see Package.swift
