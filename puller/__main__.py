from puller.main import main

main()
