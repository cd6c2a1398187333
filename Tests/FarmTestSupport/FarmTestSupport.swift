import LocalFarm
