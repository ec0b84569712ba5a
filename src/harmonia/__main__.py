from harmonia.cli import main

main()
